"""Crash and resume: a shard's process SIGKILLed mid-shard under the multiprocess executor.

At every kill point K (a batch index), one test case:

1. **The killed run.** ``killing_fields`` (``unused_fields`` plus a scan log and a kill switch,
   ``crash_tools.py``) runs through ``execute_job`` under Dagster's multiprocess executor, every
   step in its own child process, with a retry policy of 0. Scanning batch K, the shard's step
   process sends itself SIGKILL: the batches of that shard before K were checkpointed in the
   ledger, K was not, and none of them was lifted into a partial; the other shard, which ran to
   its end, lifted its batches into one. The run must fail, with no report stored.
2. **Two resumes from the same crash state.** The store (ledger and reports, one SQLite file) is
   copied byte for byte (SQLite backup) right after the crash. Then (a) a *new run* of the job
   for the partition resumes on the copy, and (b) *Dagster's re-execution from failure*
   (``ReexecutionOptions.from_failure``) resumes on the original.
3. **What is asserted of each resume**: the run succeeded; its report rows equal a fault-free
   ``unused_fields`` report of the same scope and batch size (``entity_type`` aside); and the
   batches it scanned are **exactly the planned batches missing from the ledger after the
   crash, each scanned once**: batch K, the batches of K's shard after K, and nothing the
   ledger held. So no checkpointed batch is ever scanned twice, and what is rescanned beyond
   the batches the killed run never reached is the batch in flight (K) alone. The resumed
   shard folds what was checkpointed with what it scans and lifts it: finalise folds two
   partials and no single batch.

One extra case shows the other path: with ``RetryPolicy(max_retries=1)`` Dagster retries the
killed step within the same run, and only batch K is scanned twice.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import run_partition
from crash_tools import PARTITIONS_NAME, TOOL_NAME, crash_job
from dagster import (
    DagsterEventType,
    DagsterInstance,
    ReexecutionOptions,
    RetryPolicy,
    execute_job,
    instance_for_test,
)

from precompute_assets.core.ledger import batches as ledger_batches
from precompute_assets.core.ledger import partials
from precompute_assets.core.plan import Shard, plan_shards
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource
from tool_plugins.unused_fields import UnusedFields

pytestmark = pytest.mark.slow

SCOPE = "t1-s001"  # the largest space of the session's demo source: 16,929 work items
BATCH_SIZE = 1_000
MAX_SHARDS = 2
BATCH_COUNT = 17  # ceil(16,929 / 1,000): shard 0 runs batches 0-8, shard 1 runs batches 9-16
# First, second, middle and last batch of each shard: a shard killed before its first
# checkpoint, after one, in the middle, and on its last batch.
KILL_POINTS = [0, 1, 2, 4, 6, 8, 9, 10, 11, 13, 15, 16]

# Every step in a child process, two at a time: both shards run at once. Forkserver children
# fork from one server that has already imported the framework and Dagster's instance storage,
# which a spawned child would import again for every step (about a second each). crash_tools
# itself cannot be preloaded: Python 3.11's forkserver ignores the parent's sys.path.
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
RUN_CONFIG = {
    "execution": {
        "config": {
            "multiprocess": {
                "max_concurrent": 2,
                "start_method": {"forkserver": {"preload_modules": PRELOAD}},
            }
        }
    }
}
SCAN_STEP = f"{TOOL_NAME}_report.{TOOL_NAME}_scan_shard"
FINALISE_STEP = f"{TOOL_NAME}_report.{TOOL_NAME}_finalise"


@pytest.fixture(scope="module")
def dagster_instance(tmp_path_factory) -> DagsterInstance:
    """A persistent on-disk instance: the runs, events and step outputs that re-execution reads."""
    with instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
        instance.add_dynamic_partitions(PARTITIONS_NAME, [SCOPE])
        yield instance


@pytest.fixture(scope="module")
def clean_rows(source_url, tmp_path_factory) -> pd.DataFrame:
    """The fault-free report of the plain ``unused_fields`` tool, same scope and batch size."""
    store = tmp_path_factory.mktemp("clean_store") / "reports.db"
    precompute = PrecomputeResource(
        source_url=source_url,
        store_url=f"sqlite:///{store}",
        batch_size=BATCH_SIZE,
        max_shards=MAX_SHARDS,
    )
    tool = UnusedFields()
    defs = build_definitions({tool.name: tool}, precompute, RetryPolicy(max_retries=0))
    with instance_for_test() as instance:
        assert run_partition(defs, tool.name, SCOPE, instance).success
    header, rows = precompute.store().read(tool.name, SCOPE)
    assert (header.batch_count, header.shard_count) == (BATCH_COUNT, 1)  # in-process: one
    return rows.drop(columns=["entity_type"])


@pytest.fixture(autouse=True)
def _no_cache_tier(monkeypatch):
    # Contributions must live in the SQL ledger, where the test reads them.
    monkeypatch.delenv("PRECOMPUTE_CACHE_URL", raising=False)


def _job_args(source_url: str, store: Path, scan_log: Path, **kwargs) -> dict:
    return {
        "source_url": source_url,
        "store_url": f"sqlite:///{store}",
        "batch_size": BATCH_SIZE,
        "max_shards": MAX_SHARDS,
        "scan_log": str(scan_log),
        **kwargs,
    }


def _run(instance: DagsterInstance, job_args: dict, **kwargs):
    return execute_job(
        crash_job(**job_args),
        instance=instance,
        run_config=RUN_CONFIG,
        tags={"dagster/partition": SCOPE},
        **kwargs,
    )


def _scans(scan_log: Path) -> list[tuple[int, int]]:
    """(pid, batch index) of every scan, in the order the log got them."""
    if not scan_log.exists():
        return []
    lines = scan_log.read_text().split()
    return [(int(pid), int(index)) for pid, index in zip(lines[::2], lines[1::2], strict=True)]


def _ledger(store: Path) -> tuple[set[int], set[range]]:
    """The batches the ledger holds as entries, and the spans of its lifted partials."""
    engine = sa.create_engine(f"sqlite:///{store}")
    entries = sa.select(ledger_batches.c.batch).where(
        (ledger_batches.c.tool == TOOL_NAME) & (ledger_batches.c.scope == SCOPE)
    )
    lifted = sa.select(partials.c.first_batch, partials.c.last_batch).where(
        (partials.c.tool == TOOL_NAME) & (partials.c.scope == SCOPE)
    )
    with engine.connect() as connection:
        recorded = set(connection.execute(entries).scalars())
        spans = {range(first, last + 1) for first, last in connection.execute(lifted)}
    engine.dispose()
    return recorded, spans


def _held(ledger: tuple[set[int], set[range]]) -> set[int]:
    entries, spans = ledger
    return entries | {index for span in spans for index in span}


def _copy_store(store: Path, copy: Path) -> None:
    """A consistent copy of a SQLite file in WAL mode (the backup API, not a file copy)."""
    with sqlite3.connect(store) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    source.close()
    target.close()


def _events(result, event_type: DagsterEventType) -> list:
    return [event for event in result.all_events if event.event_type == event_type]


def _header(store: Path):
    return PrecomputeResource(store_url=f"sqlite:///{store}").store().header(TOOL_NAME, SCOPE)


def _rows(store: Path) -> pd.DataFrame:
    stored = PrecomputeResource(store_url=f"sqlite:///{store}").store().read(TOOL_NAME, SCOPE)
    assert stored is not None, "no report stored"
    return stored[1].drop(columns=["entity_type"])


def _shard_of(batch: int) -> Shard:
    return next(s for s in plan_shards(BATCH_COUNT, MAX_SHARDS) if batch in s.batch_indices)


def _check_killed_run(
    result, kill_batch: int, scans: list[tuple[int, int]], ledger: tuple[set[int], set[range]]
):
    """The run failed at the kill; the ledger holds exactly the batches checkpointed before it:
    the killed shard's as entries (it died before lifting them), the other shard's lifted."""
    assert not result.success
    shard = _shard_of(kill_batch)
    killed_step = f"{SCAN_STEP}[{shard.mapping_key}]"
    other_step = f"{SCAN_STEP}[shard_{1 - shard.index}]"

    # What Dagster recorded: an engine event naming the signal, then the step's failure (no
    # retry: the policy is 0), the run's failure, and no finalise.
    crashes = [e for e in _events(result, DagsterEventType.ENGINE_EVENT) if e.step_key]
    assert [e.step_key for e in crashes] == [killed_step]
    assert "terminated by signal 9 (SIGKILL)" in crashes[0].message
    failures = _events(result, DagsterEventType.STEP_FAILURE)
    assert [e.step_key for e in failures] == [killed_step]
    assert "ChildProcessCrashException" in failures[0].event_specific_data.error.to_string()
    assert not _events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(_events(result, DagsterEventType.RUN_FAILURE)) == 1
    succeeded = {e.step_key for e in _events(result, DagsterEventType.STEP_SUCCESS)}
    assert other_step in succeeded and FINALISE_STEP not in succeeded

    # The scan log: one process scanned the killed shard up to K and died on K.
    killed_pids = {pid for pid, index in scans if index == kill_batch}
    assert len(killed_pids) == 1
    killed_scans = [index for pid, index in scans if pid in killed_pids]
    assert killed_scans == [index for index in shard.batch_indices if index <= kill_batch]
    # The ledger: every batch scanned before K, and none of K and after, in the killed shard;
    # the other shard ran to its end in its own process, and all of it was checkpointed.
    scanned = {index for _, index in scans}
    assert _held(ledger) <= scanned
    not_reached = {index for index in shard.batch_indices if index >= kill_batch}
    assert _held(ledger) == set(range(BATCH_COUNT)) - not_reached
    entries, spans = ledger
    other = plan_shards(BATCH_COUNT, MAX_SHARDS)[1 - shard.index]
    assert spans == {other.batch_indices}, "the shard that finished lifted its batches"
    assert entries == {index for index in shard.batch_indices if index < kill_batch}


def _check_resume(result, scans, ledger_after_crash, store: Path, clean_rows):
    assert result.success
    missing = sorted(set(range(BATCH_COUNT)) - _held(ledger_after_crash))
    # Exactly the batches the ledger lacked, each once: no checkpointed batch scanned again.
    assert sorted(index for _, index in scans) == missing
    checks = _events(result, DagsterEventType.ASSET_CHECK_EVALUATION)
    complete = [e for e in checks if e.event_specific_data.check_name == "report_complete"]
    assert len(complete) == 1 and complete[0].event_specific_data.passed
    pd.testing.assert_frame_equal(_rows(store), clean_rows)
    header = _header(store)
    assert header.generation == 1 and header.batch_count == BATCH_COUNT
    assert header.summary["batches_rescanned_at_finalise"] == 0  # the shards did the work
    # The resumed shard folded what the killed one had checkpointed, and lifted it too.
    assert (header.summary["partials_folded"], header.summary["batches_folded_unlifted"]) == (2, 0)


@pytest.mark.parametrize("kill_batch", KILL_POINTS)
def test_a_run_killed_mid_shard_resumes_by_new_run_and_by_reexecution(
    kill_batch, dagster_instance, source_url, clean_rows, tmp_path
):
    store, copy = tmp_path / "reports.db", tmp_path / "reports_copy.db"
    marker = tmp_path / "killed"
    killed_log = tmp_path / "killed.log"
    kill = {"kill_batch": kill_batch, "marker": str(marker), "max_retries": 0}

    killed = _run(dagster_instance, _job_args(source_url, store, killed_log, **kill))

    assert marker.exists()
    ledger = _ledger(store)
    _check_killed_run(killed, kill_batch, _scans(killed_log), ledger)
    assert _header(store) is None
    _copy_store(store, copy)

    # (a) A new run of the job for the same partition, on the copy: it re-plans, finds the open
    # job with the same fingerprint, and resumes it.
    new_run_log = tmp_path / "new_run.log"
    new_run = _run(dagster_instance, _job_args(source_url, copy, new_run_log, **kill))
    _check_resume(new_run, _scans(new_run_log), ledger, copy, clean_rows)
    assert _header(copy).summary["resumed"] is True

    # (b) Dagster's re-execution from failure, on the original store: the failed shard and
    # finalise (which evaluates the completeness check) run again; initialise and the other
    # shard do not.
    reexecution_log = tmp_path / "reexecution.log"
    reexecution = _run(
        dagster_instance,
        _job_args(source_url, store, reexecution_log, **kill),
        reexecution_options=ReexecutionOptions.from_failure(killed.run_id, dagster_instance),
    )
    _check_resume(reexecution, _scans(reexecution_log), ledger, store, clean_rows)
    started = {e.step_key for e in _events(reexecution, DagsterEventType.STEP_START)}
    assert started == {f"{SCAN_STEP}[{_shard_of(kill_batch).mapping_key}]", FINALISE_STEP}


def test_a_killed_shard_is_retried_in_the_same_run_by_its_retry_policy(
    dagster_instance, source_url, clean_rows, tmp_path
):
    """With a retry policy, Dagster retries a step whose process died; only K is scanned twice."""
    kill_batch = 4
    store, scan_log = tmp_path / "reports.db", tmp_path / "scans.log"
    kill = {"kill_batch": kill_batch, "marker": str(tmp_path / "killed"), "max_retries": 1}

    result = _run(dagster_instance, _job_args(source_url, store, scan_log, **kill))

    assert result.success
    killed_step = f"{SCAN_STEP}[shard_0]"
    crashes = [e for e in _events(result, DagsterEventType.ENGINE_EVENT) if e.step_key]
    assert [e.step_key for e in crashes] == [killed_step]
    assert "terminated by signal 9 (SIGKILL)" in crashes[0].message
    retries = _events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    assert [e.step_key for e in retries] == [killed_step]
    assert not _events(result, DagsterEventType.STEP_FAILURE)
    scans = _scans(scan_log)
    counts = Counter(index for _, index in scans)
    assert counts == Counter([*range(BATCH_COUNT), kill_batch])
    # The retry ran in a new process and began at K: batches 0..K-1 were skipped.
    killed_pid = next(pid for pid, index in scans if index == kill_batch)
    shard = _shard_of(kill_batch).batch_indices
    retry_scans = [index for pid, index in scans if pid != killed_pid and index in shard]
    assert retry_scans == [index for index in shard if index >= kill_batch]
    pd.testing.assert_frame_equal(_rows(store), clean_rows)


def test_a_shard_killed_while_scanning_on_two_threads_resumes_from_what_they_checkpointed(
    dagster_instance, source_url, clean_rows, tmp_path
):
    """Two threads scan the shard: the kill at K leaves checkpointed whatever batches either
    finished, in whatever order they finished; the next run scans exactly the others."""
    kill_batch = 4
    store, killed_log = tmp_path / "reports.db", tmp_path / "killed.log"
    kill = {"kill_batch": kill_batch, "marker": str(tmp_path / "killed"), "max_retries": 0}

    killed = _run(
        dagster_instance, _job_args(source_url, store, killed_log, **kill, scan_threads=2)
    )

    assert not killed.success
    ledger = _ledger(store)
    entries, spans = ledger
    shard = _shard_of(kill_batch)
    scans = _scans(killed_log)
    [killed_pid] = {pid for pid, index in scans if index == kill_batch}
    killed_scans = {index for pid, index in scans if pid == killed_pid}
    assert entries <= killed_scans - {kill_batch} and entries <= set(shard.batch_indices)
    assert spans == {plan_shards(BATCH_COUNT, MAX_SHARDS)[1 - shard.index].batch_indices}

    resumed_log = tmp_path / "resumed.log"
    resumed = _run(
        dagster_instance, _job_args(source_url, store, resumed_log, **kill, scan_threads=2)
    )
    _check_resume(resumed, _scans(resumed_log), ledger, store, clean_rows)


def test_kill_points_cover_every_shard_boundary():
    """The kill points, as quoted: at least ten, each shard's first and last batch among them."""
    shards = plan_shards(BATCH_COUNT, MAX_SHARDS)
    assert len(KILL_POINTS) >= 10
    for shard in shards:
        assert {shard.first_batch, shard.first_batch + 1, shard.last_batch} <= set(KILL_POINTS)
