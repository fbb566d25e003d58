"""Faults a batch framework meets end in the clean report, or in a clear error with the old one.

Atomic commit under a polling reader, generation fencing, concurrent runs, unknown and deleted
scopes, malformed reports, an unreachable source, connections dropped mid-scan, and concurrent
SQLite writers.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import SMALL_SCALE, largest_scope, run_partition
from dagster import DagsterEventType, RetryPolicy

from precompute_assets.contract import REPORT_COLUMNS, Extent
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.phases import finalise_job, open_job, run_shard
from precompute_assets.core.reader import ReportReader
from precompute_assets.core.report_store import ReportHeader, ReportStore, StaleGenerationError
from precompute_assets.demo.source import generate_source, touch_space
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource
from tool_plugins.unused_fields import UnusedFields

PROJECT = Path(__file__).resolve().parents[1]
TOOL = "unused_fields"


@pytest.fixture
def own(own_source, tools):
    return own_source, build_definitions(tools, own_source, RetryPolicy(max_retries=1))


def _failure_messages(result) -> str:
    return "\n".join(
        event.event_specific_data.error.to_string()
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_FAILURE
    )


def _retries(result, step_suffix: str) -> int:
    return sum(
        1
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY
        and event.step_key.endswith(step_suffix)
    )


# Atomic commit and fencing ------------------------------------------------------------------


def _version(version: int, rows: int) -> tuple[ReportHeader, pd.DataFrame]:
    """Report number ``version``: every row carries the version as its usage count."""
    frame = pd.DataFrame(
        {
            "entity_type": "field",
            "entity_id": [str(i) for i in range(rows)],
            "unused": False,
            "usage_count": version,
            "last_used": pd.Timestamp(1_700_000_000, unit="s", tz="UTC"),
            "detail": [{} for _ in range(rows)],
        }
    )[list(REPORT_COLUMNS)]
    header = ReportHeader(TOOL, "s", version, time.time(), "w", rows, rows, 0, 1, 1, 0.0)
    return header, frame


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_polling_reader_never_sees_a_mix_or_an_empty_report(backend, tmp_path, request):
    url = (
        sqlite_url(tmp_path / "r.db")
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    store = ReportStore(create_engine_for(url))
    store.commit(*_version(1, 300))
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    problems: list[str] = []

    def read_forever() -> None:
        reader_store = ReportStore(create_engine_for(url))
        while not stop.is_set():
            header, rows = reader_store.read(TOOL, "s")
            versions = set(rows["usage_count"])
            if len(rows) != header.row_count or versions != {header.generation}:
                problems.append(f"header {header.generation}/{header.row_count}: {versions}")
            seen.append((header.generation, len(rows)))

    reader = threading.Thread(target=read_forever)
    reader.start()
    deadline = time.monotonic() + 60
    while not seen and reader.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)  # the reader is reading before the first commit
    version = 1
    # At least 58 commits, and more until the reader has seen several (a busy machine may give
    # the reader thread few turns).
    while version < 60 or (len({g for g, _ in seen}) <= 3 and time.monotonic() < deadline):
        version += 1
        store.commit(*_version(version, 300 if version % 2 else 500))
    stop.set()
    reader.join(timeout=30)
    assert problems == []
    assert len({generation for generation, _ in seen}) > 3, "the reader saw reports change"


def test_an_older_job_cannot_overwrite_a_newer_report(own):
    precompute, _ = own
    tool = UnusedFields()
    scope = largest_scope(precompute)
    source, ledger, store = precompute.source_engine(), precompute.ledger(), precompute.store()
    older = open_job(tool, scope, source, ledger, 1_000)
    touch_space(precompute.source_url, scope)
    newer = open_job(tool, scope, source, ledger, 1_000)
    assert newer.generation == older.generation + 1
    for job in (newer, older):
        for shard in job.shards(2):
            run_shard(tool, job, shard, source, ledger)
    finalise_job(tool, newer, source, ledger, store, shard_count=2)

    # The older job was superseded when the newer one opened: it commits nothing.
    assert ledger.status(older) == "superseded"
    assert finalise_job(tool, older, source, ledger, store, shard_count=2) is None
    header = store.header(TOOL, scope)
    assert (header.generation, header.watermark) == (newer.generation, newer.extent.watermark)

    # A commit that got past its job's check is still fenced by the store.
    stale = replace(header, generation=older.generation, watermark="older")
    with pytest.raises(StaleGenerationError, match="older than the stored report's generation"):
        store.commit(stale, store.read(TOOL, scope)[1])
    assert store.header(TOOL, scope) == header


@pytest.mark.slow
def test_two_runs_of_one_scope_at_once_leave_one_complete_report(own, tmp_path, instance):
    precompute, _ = own
    scope = largest_scope(precompute)
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "PRECOMPUTE_SOURCE_URL": precompute.source_url,
        "PRECOMPUTE_STORE_URL": precompute.store_url,
        "PRECOMPUTE_BATCH_SIZE": "500",
    }
    # The project's Dagster instance exists before runs start (Dagster's own SQLite storage
    # is not safe to create from two processes at once).
    create = (
        "import sys; from dagster import DagsterInstance\n"
        "DagsterInstance.get().add_dynamic_partitions(sys.argv[1] + '_scopes', [sys.argv[2]])\n"
    )
    subprocess.run([sys.executable, "-c", create, TOOL, scope], env=env, check=True)
    # Two runs of the scope at once, each in its own process (as two run workers would).
    run = (
        "import sys\n"
        "from dagster import DagsterInstance\n"
        "from precompute_assets.core.registry import load_tools\n"
        "from precompute_assets.orchestration.definitions import build_definitions\n"
        "from precompute_assets.orchestration.runs import materialise_scope\n"
        "tool = load_tools(autoload=False)[sys.argv[1]]\n"
        "with DagsterInstance.get() as instance:\n"
        "    result = materialise_scope(build_definitions({tool.name: tool}), tool, sys.argv[2],"
        " instance)\n"
        "print('success' if result.success else 'failed')\n"
        "sys.exit(0 if result.success else 1)\n"
    )
    command = [sys.executable, "-c", run, TOOL, scope]
    runs = [
        subprocess.Popen(
            command,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert "database is locked" not in "".join(outputs)

    header, rows = precompute.store().read(TOOL, scope)
    assert header.row_count == len(rows) == rows["entity_id"].nunique()
    reference = PrecomputeResource(
        source_url=precompute.source_url, store_url=sqlite_url(tmp_path / "ref.db")
    )
    assert run_partition(
        build_definitions({TOOL: UnusedFields()}, reference), TOOL, scope, instance
    )
    expected = reference.store().read(TOOL, scope)[1]
    pd.testing.assert_frame_equal(rows, expected)


# Bad input ------------------------------------------------------------------------------------


def test_an_unknown_scope_fails_at_once_with_its_name(own, instance):
    _, defs = own
    result = run_partition(defs, TOOL, "zz-s999", instance, raise_on_error=False)
    assert not result.success
    assert "no space 'zz-s999' in the source" in _failure_messages(result)
    assert _retries(result, "initialise") == 0


class DeletingFields(UnusedFields):
    """Deletes its scope from the source while the job scans it."""

    name = TOOL

    def __init__(self, source_url: str) -> None:
        self.source_url = source_url

    def scan(self, source, batch):
        if batch.index == 0:
            with create_engine_for(self.source_url).begin() as connection:
                connection.execute(sa.text("DELETE FROM spaces WHERE key = :k"), {"k": batch.scope})
        return super().scan(source, batch)


def test_a_scope_deleted_mid_run_is_not_committed_and_the_old_report_stays(own, instance, tools):
    precompute, defs = own
    scope = largest_scope(precompute)
    assert run_partition(defs, TOOL, scope, instance).success
    before = precompute.store().read(TOOL, scope)

    deleting = build_definitions({TOOL: DeletingFields(precompute.source_url)}, precompute)
    result = run_partition(deleting, TOOL, scope, instance, raise_on_error=False)

    assert not result.success
    assert f"scope '{scope}' was deleted from the source during the {TOOL} job" in (
        _failure_messages(result)
    )
    after = precompute.store().read(TOOL, scope)
    assert after[0] == before[0]
    pd.testing.assert_frame_equal(after[1], before[1])


class MalformedFields(UnusedFields):
    name = TOOL

    def finalise(self, source, scope, total, params):
        return super().finalise(source, scope, total, params).drop(columns=["unused"])


def test_a_malformed_report_is_rejected_before_commit(own, instance):
    precompute, defs = own
    scope = largest_scope(precompute)
    assert run_partition(defs, TOOL, scope, instance).success
    before = precompute.store().read(TOOL, scope)

    result = run_partition(
        build_definitions({TOOL: MalformedFields()}, precompute),
        TOOL,
        scope,
        instance,
        raise_on_error=False,
    )

    assert not result.success
    message = _failure_messages(result)
    assert (
        f"tool '{TOOL}', scope '{scope}': malformed report: missing columns ['unused']" in message
    )
    assert _retries(result, "finalise") == 0
    reader = ReportReader({TOOL: UnusedFields()}, precompute.store(), precompute.source_engine())
    assert reader.read(TOOL, scope).header == before[0]


# Faults of the source and the ledger ------------------------------------------------------------


def test_an_unreachable_source_is_retried_with_backoff_then_fails_naming_it(
    tools, tmp_path, instance
):
    down = "postgresql+psycopg2://reporter:s3cret@127.0.0.1:1/source"
    precompute = PrecomputeResource(source_url=down, store_url=sqlite_url(tmp_path / "r.db"))
    defs = build_definitions(tools, precompute, RetryPolicy(max_retries=2, delay=0.1))
    started = time.monotonic()
    result = run_partition(defs, TOOL, "t1-s001", instance, raise_on_error=False)
    assert not result.success
    assert _retries(result, "initialise") == 2
    assert time.monotonic() - started >= 0.1 + 0.2, "exponential backoff between attempts"
    message = _failure_messages(result)
    assert "cannot reach database postgresql+psycopg2://reporter:***@127.0.0.1:1/source" in message
    assert "s3cret" not in message


class DisconnectedFields(UnusedFields):
    """On its first scan of batch 1, the database terminates the shard's connection."""

    name = TOOL

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.dropped = False

    def scan(self, source, batch):
        if batch.index == 1 and not self.dropped:
            self.dropped = True
            pid = source.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with create_engine_for(self.admin_url).connect() as admin:
                admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        return super().scan(source, batch)


@pytest.mark.slow
def test_a_connection_dropped_mid_scan_is_retried_and_the_report_is_clean(
    postgres_url, tmp_path, instance
):
    generate_source(postgres_url, SMALL_SCALE)
    precompute = PrecomputeResource(
        source_url=postgres_url,
        store_url=sqlite_url(tmp_path / "r.db"),
        batch_size=1_000,
        max_shards=1,
    )
    scope = largest_scope(precompute)
    assert run_partition(
        build_definitions({TOOL: UnusedFields()}, precompute), TOOL, scope, instance
    )
    clean = precompute.store().read(TOOL, scope)[1]

    tool = DisconnectedFields(postgres_url)
    defs = build_definitions({TOOL: tool}, precompute, RetryPolicy(max_retries=2, delay=0.1))
    result = run_partition(defs, TOOL, scope, instance)

    assert tool.dropped and result.success
    assert _retries(result, "scan_shard[shard_0]") == 1
    pd.testing.assert_frame_equal(precompute.store().read(TOOL, scope)[1], clean)


def _record_many(store_url: str, worker: int, count: int) -> None:
    ledger = Ledger(create_engine_for(store_url))
    plan = ledger.open_job("writers", "s", Extent(0, 10**6, 10**6, "w"), 1)
    for index in range(count):
        ledger.record(plan, worker * count + index, {"worker": worker, "index": index})


@pytest.mark.slow
def test_concurrent_sqlite_writers_do_not_lock(tmp_path):
    url = sqlite_url(tmp_path / "ledger.db")
    ledger = Ledger(create_engine_for(url))
    plan = ledger.open_job("writers", "s", Extent(0, 10**6, 10**6, "w"), 1)
    workers, count = 4, 150
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_record_many, args=(url, worker, count)) for worker in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * workers
    assert ledger.recorded(plan, range(workers * count)) == set(range(workers * count))
