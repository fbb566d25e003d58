"""Property-based: whatever happens to batches, the report is the fold of distinct batches.

A Hypothesis state machine drives the framework's own phase functions
(``precompute_assets.core.phases``) against a real source and a real SQLite ledger, with the real
Redis tier (``TestLedgerMachine``) and without it (``TestSqlLedgerMachine``): it delivers batches
in any order, redelivers them (after their shard was lifted too), crashes scans before their
checkpoint, loses contributions (an eviction from the tier, a row gone from the ledger), runs
whole shards cut in different numbers (so partials of one cut meet shards of another), kills a
shard in the middle of lifting its partial (before the partial is written, or after it and
before the batches' entries are removed), loses a partial, and finalises. After every finalise
the stored report must equal the reference report, a plain fold over every distinct batch: a
batch counted twice or lost changes a usage count.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import require_service
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from precompute_assets.core.cache import RedisCache, contribution_key
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.phases import (
    finalise_job,
    open_job,
    run_shard,
    scan_and_record,
)
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.schema import batches, partials
from precompute_assets.demo.source import DemoScale, generate_source
from tool_plugins.unused_fields import UnusedFields

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/14"
BATCH_SIZE = 300
# Where a shard dies while lifting, and the ledger's statement it dies at.
KILL_AT = {
    "before the partial": "INSERT INTO precompute_partials",
    "after the partial": "DELETE FROM precompute_batches",  # rolled back with the partial
}
MOMENTS = sorted(KILL_AT)


class CrashingFields(UnusedFields):
    """unused_fields whose scan can be told to die after its query, before its checkpoint."""

    def __init__(self) -> None:
        self.crash_next = False

    def scan(self, source, batch):
        contribution = super().scan(source, batch)
        if self.crash_next:
            self.crash_next = False
            raise ConnectionResetError("worker died mid-batch")
        return contribution


class DyingRedis(RedisCache):
    """The Redis tier, whose next deletion can be told to die first (the worker is killed)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.die_on_delete = False

    def delete_many(self, keys) -> None:
        if self.die_on_delete:
            self.die_on_delete = False
            raise ConnectionResetError("worker died before deleting the lifted entries")
        super().delete_many(keys)


class StatementKiller:
    """Kills the worker (raises) at the next SQL statement on ``engine`` that starts ``prefix``:
    the transaction around it is rolled back, as when its process dies."""

    def __init__(self, engine: sa.Engine) -> None:
        self.prefix: str | None = None
        sa.event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, connection, cursor, statement, parameters, context, executemany) -> None:
        if self.prefix is not None and statement.lstrip().startswith(self.prefix):
            self.prefix = None
            raise ConnectionResetError(f"worker died at {statement[:40]!r}")


@cache
def _source() -> tuple[str, str]:
    """A small source, and its space with the most work items."""
    folder = Path(tempfile.mkdtemp(prefix="precompute-properties-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    url = sqlite_url(folder / "source.db")
    generate_source(url, DemoScale(tenants=1, spaces=3, work_items=6_000, seed=5))
    with create_engine_for(url).connect() as connection:
        scope = connection.exec_driver_sql(
            "SELECT s.key FROM spaces s JOIN work_items w ON w.space_id = s.id"
            " GROUP BY s.key ORDER BY COUNT(*) DESC LIMIT 1"
        ).scalar()
    return url, scope


def _comparable(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values("entity_id").reset_index(drop=True)


class LedgerMachine(RuleBasedStateMachine):
    """Against the Redis tier; ``SqlLedgerMachine`` against the SQL ledger alone."""

    def make_cache(self) -> DyingRedis | None:
        return DyingRedis(REDIS_URL)

    @initialize()
    def open(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="precompute-ledger-"))
        self.tool = CrashingFields()
        url, self.scope = _source()
        self.source = create_engine_for(url, must_exist=True)
        store_engine = create_engine_for(sqlite_url(self.folder / "store.db"))
        self.cache = self.make_cache()
        self.ledger = Ledger(store_engine, self.cache)
        self.killer = StatementKiller(store_engine)
        self.store = ReportStore(store_engine)
        self.plan = open_job(self.tool, self.scope, self.source, self.ledger, BATCH_SIZE)
        self.reference = self._reference()
        self.finalised = 0

    def teardown(self) -> None:
        self.ledger.engine.dispose()
        self.source.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _reference(self) -> pd.DataFrame:
        """A plain fold over every distinct batch, in order, outside the ledger."""
        from precompute_assets.core.rows import validate_report

        total = self.tool.empty()
        with self.source.connect() as connection:
            for index in range(self.plan.batch_count):
                total = self.tool.merge([total, self.tool.scan(connection, self.plan.batch(index))])
            rows = self.tool.finalise(connection, self.scope, total, self.plan.extent.params)
        return _comparable(validate_report(self.tool, self.scope, rows))

    def _batch(self, data) -> int:
        return data.draw(st.integers(0, self.plan.batch_count - 1), label="batch")

    @rule(data=st.data())
    def deliver(self, data) -> None:
        index = self._batch(data)
        with self.source.connect() as connection:
            scan_and_record(self.tool, connection, self.ledger, self.plan, self.plan.batch(index))

    @rule(data=st.data())
    def crash_mid_batch(self, data) -> None:
        index = self._batch(data)
        self.tool.crash_next = True
        with self.source.connect() as connection, pytest.raises(ConnectionResetError):
            scan_and_record(self.tool, connection, self.ledger, self.plan, self.plan.batch(index))

    @rule(data=st.data())
    def lose(self, data) -> None:
        """A contribution is lost: evicted from the cache tier, or its ledger row gone."""
        index = self._batch(data)
        if self.cache is not None:
            key = contribution_key(self.tool.name, self.scope, self.plan.job_id, index)
            self.cache.delete_many([key])
            return
        with self.ledger.engine.begin() as connection:
            connection.execute(
                batches.delete().where(
                    (batches.c.tool == self.tool.name)
                    & (batches.c.generation == self.plan.generation)
                    & (batches.c.batch == index)
                )
            )

    @rule(data=st.data(), max_shards=st.integers(1, 4))
    def run_a_shard(self, data, max_shards) -> None:
        shards = self.plan.shards(max_shards)
        shard = data.draw(st.sampled_from(shards), label="shard")
        run_shard(self.tool, self.plan, shard, self.source, self.ledger)

    @rule(data=st.data(), max_shards=st.integers(1, 4), moment=st.sampled_from(MOMENTS))
    def shard_killed_while_lifting(self, data, max_shards, moment) -> None:
        """The shard scans its batches, then dies as it lifts them: before its partial is
        written, or after (on the cache tier, before the batches' entries are deleted)."""
        shard = data.draw(st.sampled_from(self.plan.shards(max_shards)), label="shard")
        if moment == "after the partial" and self.cache is not None:
            self.cache.die_on_delete = True
        else:
            self.killer.prefix = KILL_AT[moment]
        try:
            run_shard(self.tool, self.plan, shard, self.source, self.ledger)
        except ConnectionResetError:
            pass  # the shard had something to lift; one that lifts nothing just ran
        finally:
            self.killer.prefix = None
            if self.cache is not None:
                self.cache.die_on_delete = False

    @rule(data=st.data())
    def lose_a_partial(self, data) -> None:
        """A lifted partial is lost (its row deleted by hand): its batches must be rescanned."""
        with self.ledger.engine.begin() as connection:
            spans = connection.execute(sa.select(partials.c.first_batch)).scalars().all()
            if spans:
                first = data.draw(st.sampled_from(sorted(spans)), label="partial")
                connection.execute(partials.delete().where(partials.c.first_batch == first))

    @rule()
    def finalise(self) -> None:
        finalise_job(self.tool, self.plan, self.source, self.ledger, self.store, shard_count=1)
        self.finalised += 1
        stored = self.store.read(self.tool.name, self.scope)[1]
        pd.testing.assert_frame_equal(_comparable(stored), self.reference)
        # The next job starts clean: a new generation, nothing carried over.
        self.plan = open_job(self.tool, self.scope, self.source, self.ledger, BATCH_SIZE)
        assert self.ledger.recorded(self.plan, range(self.plan.batch_count)) == set()

    @invariant()
    def ledger_holds_only_planned_batches(self) -> None:
        if hasattr(self, "plan"):
            held = self.ledger.recorded(self.plan, range(self.plan.batch_count))
            assert held <= set(range(self.plan.batch_count))

    @invariant()
    def partials_never_overlap(self) -> None:
        if hasattr(self, "plan"):
            with self.ledger.engine.connect() as connection:
                spans = connection.execute(
                    sa.select(partials.c.first_batch, partials.c.last_batch)
                    .where(partials.c.generation == self.plan.generation)
                    .order_by(partials.c.first_batch)
                ).all()
            for (_, last), (first, _) in itertools.pairwise(spans):
                assert last < first, spans

    @precondition(lambda self: hasattr(self, "plan"))
    @rule()
    def redeliver_everything_held(self) -> None:
        with self.source.connect() as connection:
            for index in sorted(self.ledger.recorded(self.plan, range(self.plan.batch_count))):
                batch = self.plan.batch(index)
                scan_and_record(self.tool, connection, self.ledger, self.plan, batch)


@pytest.fixture(autouse=True)
def redis_available():
    cache_tier = RedisCache(REDIS_URL)
    try:
        cache_tier.client.flushdb()
    except Exception:
        require_service("Redis at 127.0.0.1:6379", "start redis-server on port 6379")
    yield
    cache_tier.client.flushdb()


class SqlLedgerMachine(LedgerMachine):
    def make_cache(self) -> RedisCache | None:
        return None


TestLedgerMachine = LedgerMachine.TestCase
TestSqlLedgerMachine = SqlLedgerMachine.TestCase
TestLedgerMachine.settings = TestSqlLedgerMachine.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
