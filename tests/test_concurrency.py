"""Writers at once on one store, as real connections released together by a barrier, many rounds.

PostgreSQL runs them in READ COMMITTED, where a writer that waited on a row lock sees the row as
the other writer left it; SQLite serialises writers, and runs the same cases. Each round uses a
scope of its own, so that both a scope's first report (no header to lock yet) and a replaced
one are raced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine

from precompute_assets.contract import REPORT_COLUMNS, Extent
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.phases import finalise_job, open_job, run_shard
from precompute_assets.core.report_store import ReportHeader, ReportStore, StaleGenerationError
from tool_plugins.unused_fields import UnusedFields

pytestmark = pytest.mark.slow

ROUNDS = 12
TOOL = "unused_fields"
# Big enough that a commit's transaction is still open when the other writer arrives.
BIG_REPORT_ROWS = 20_000


@pytest.fixture(params=["postgresql", "sqlite"])
def store_engine(request, tmp_path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = sqlite_url(tmp_path / "store.db")
    engine = create_engine_for(url)
    yield engine
    engine.dispose()


def _at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` for each i on threads of their own, released together; results or errors."""
    barrier = threading.Barrier(count)

    def run(index: int) -> Any:
        barrier.wait()
        try:
            return work(index)
        except Exception as error:
            return error

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def _report(scope: str, generation: int, rows: int) -> tuple[ReportHeader, pd.DataFrame]:
    """Report ``generation`` of ``scope``: every row carries its generation as usage count."""
    frame = pd.DataFrame(
        {
            "entity_type": "field",
            "entity_id": [str(i) for i in range(rows)],
            "unused": False,
            "usage_count": generation,
            "last_used": pd.Timestamp(1_700_000_000, unit="s", tz="UTC"),
            "detail": [{} for _ in range(rows)],
        }
    )[list(REPORT_COLUMNS)]
    header = ReportHeader(TOOL, scope, generation, time.time(), "w", rows, rows, 0, 1, 1, 0.0)
    return header, frame


@pytest.mark.parametrize("existing", [False, True], ids=["first report", "replaced report"])
def test_an_older_generation_never_replaces_a_newer_one(store_engine, existing):
    refused = 0
    for number in range(ROUNDS):
        scope = f"fence-{existing}-{number}"
        if existing:
            ReportStore(store_engine).commit(*_report(scope, 1, 10))
        results = _at_once(
            2, lambda index, scope=scope: _commit_late_if_older(store_engine, scope, index)
        )
        header, rows = ReportStore(store_engine).read(TOOL, scope)
        assert header.generation == 6 and len(rows) == BIG_REPORT_ROWS, (scope, results)
        assert set(rows["usage_count"]) == {6}
        assert results[0] == "committed"
        assert isinstance(results[1], StaleGenerationError) or results[1] == "committed"
        refused += isinstance(results[1], StaleGenerationError)
    # The older commit did arrive while the newer was committing, in some rounds at least.
    assert refused > 0


def _commit_late_if_older(store_engine: Engine, scope: str, index: int) -> str:
    """Writer 0 commits generation 6, a big report; writer 1 generation 4, a moment later."""
    if index == 1:
        time.sleep(0.05)
    generation, rows = (6, BIG_REPORT_ROWS) if index == 0 else (4, 10)
    ReportStore(store_engine).commit(*_report(scope, generation, rows))
    return "committed"


def test_concurrent_openers_of_one_scope_share_one_job(store_engine):
    extent = Extent(0, 9_999, 10_000, "w", {"space_id": 1})

    def open_at_once(scope: str) -> list[Any]:
        return _at_once(4, lambda _: Ledger(store_engine).open_job(TOOL, scope, extent, 1_000))

    for number in range(ROUNDS):
        plans = open_at_once(f"open-{number}")
        errors = [plan for plan in plans if isinstance(plan, Exception)]
        assert errors == [], errors
        assert len({(plan.generation, plan.job_id) for plan in plans}) == 1, plans
        assert sum(not plan.resumed for plan in plans) == 1
        # Again on the scope's existing lock row: every opener resumes the same job.
        again = open_at_once(f"open-{number}")
        assert {(plan.generation, plan.job_id, plan.resumed) for plan in again} == {
            (plans[0].generation, plans[0].job_id, True)
        }


class CountingFields(UnusedFields):
    """unused_fields counting its scans, per thread."""

    def __init__(self) -> None:
        self.scans = threading.local()

    def scan(self, source, batch):
        self.scans.count = getattr(self.scans, "count", 0) + 1
        return super().scan(source, batch)


def test_runs_sharing_a_job_commit_it_once_and_never_rescan(store_engine, source_url):
    source = create_engine_for(source_url, read_only=True)
    with source.connect() as connection:
        scope = connection.exec_driver_sql(
            "SELECT s.key FROM spaces s JOIN work_items w ON w.space_id = s.id"
            " GROUP BY s.key ORDER BY COUNT(*) DESC LIMIT 1"
        ).scalar()
    for _ in range(ROUNDS // 2):
        _share_one_job(store_engine, source, scope)


def _share_one_job(store_engine: Engine, source: Engine, scope: str) -> None:
    tool = CountingFields()
    plan = open_job(tool, scope, source, Ledger(store_engine), 1_000)
    for shard in plan.shards(2):
        run_shard(tool, plan, shard, source, Ledger(store_engine))

    def finalise(_: int) -> tuple[Any, int]:
        tool.scans.count = 0
        store = ReportStore(store_engine)
        report = finalise_job(tool, plan, source, Ledger(store_engine), store, shard_count=2)
        return report, tool.scans.count

    results = _at_once(2, finalise)
    errors = [result for result in results if isinstance(result, Exception)]
    assert errors == [], errors
    assert [scans for _, scans in results] == [0, 0], "no batch scanned again at finalise"
    committed = [report for report, _ in results if report is not None]
    assert committed, "one of them committed"
    assert {report.header.generation for report in committed} == {plan.generation}
    header = ReportStore(store_engine).header(TOOL, scope)
    assert header.generation == plan.generation

    # A run arriving after its job was closed scans nothing and commits nothing.
    ledger, store = Ledger(store_engine), ReportStore(store_engine)
    assert ledger.status(plan) == "closed"
    late = run_shard(tool, plan, plan.shards(2)[0], source, ledger)
    assert (late.batches_scanned, late.job_status) == (0, "closed")
    tool.scans.count = 0
    assert finalise_job(tool, plan, source, ledger, store, shard_count=2) is None
    assert tool.scans.count == 0
    assert store.header(TOOL, scope) == header
