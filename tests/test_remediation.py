"""Remediation as the framework runs it, without Dagster: plans from a fresh report, apply with
re-verification against the live source, undo, the audit log, and the batch protocol's safety
(any order, twice, resumed after a crash in every place a run can die), on real SQLite files and
on PostgreSQL.

Wall time: about 6 s on 2 CPUs, 3.5 s of it the PostgreSQL test (marked slow: its source).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database

from precompute_assets.core.actions import DONE, REFUSED, ActionLog
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.phases import finalise_job, open_job, run_shard
from precompute_assets.core.registry import load_tools
from precompute_assets.core.remediation import (
    PlanRefused,
    check_submittable,
    make_plan,
    run_action,
    run_batch,
)
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.schema import action_batches
from precompute_assets.demo.source import DemoScale, generate_source, touch_space

TOOLS = load_tools(autoload=False)
FIELDS, WORK_TYPES = TOOLS["unused_fields"], TOOLS["unused_work_types"]
SCALE = DemoScale(tenants=1, spaces=3, work_items=3_000, seed=13)
SCOPE = "t1-s001"  # 2,134 work items, 18 unused fields of 136 at this scale
PROJECT = Path(__file__).resolve().parents[1]


@dataclass
class World:
    """A source an admin may change, its store, and what a remediation run needs."""

    source_url: str
    store_url: str

    def __post_init__(self) -> None:
        self.source = create_engine_for(self.source_url)
        self.store_engine = create_engine_for(self.store_url)
        self.store = ReportStore(self.store_engine)
        self.log = ActionLog(self.store_engine)

    def compute(self, tool=FIELDS, scope: str = SCOPE):
        """The scope's report, as a run computes it (the framework's phase functions)."""
        reader = create_engine_for(self.source_url, read_only=True)
        ledger = Ledger(self.store_engine)
        plan = open_job(tool, scope, reader, ledger, 1_000)
        for shard in plan.shards(2):
            run_shard(tool, plan, shard, reader, ledger)
        finalised = finalise_job(tool, plan, reader, ledger, self.store, shard_count=2)
        reader.dispose()
        return finalised.header

    def report(self, tool=FIELDS, scope: str = SCOPE):
        return self.store.read_records(tool.name, scope)

    def unused(self, tool=FIELDS, scope: str = SCOPE) -> list[str]:
        _, records = self.report(tool, scope)
        return [r["entity_id"] for r in records if r["unused"]]

    def watermark(self, tool=FIELDS, scope: str = SCOPE) -> str | None:
        with self.source.connect() as connection:
            return tool.catalogue.watermark(connection, [scope]).get(scope)

    def plan(self, entities: list[str], tool=FIELDS, scope: str = SCOPE, key: str = "k1"):
        header, records = self.report(tool, scope)
        return make_plan(self.log, tool, header, records, entities, self.watermark(tool), key)

    def run(self, action_id: str, tool=FIELDS):
        self.log.submit(action_id)
        return run_action(tool, action_id, self.source, self.log, self.store)

    def configuration(self, table: str = "space_fields", scope: str = SCOPE) -> set[tuple]:
        with self.source.connect() as connection:
            return set(
                connection.exec_driver_sql(
                    f"SELECT a.* FROM {table} a JOIN spaces s ON s.id = a.space_id"
                    f" WHERE s.key = '{scope}'"
                ).all()
            )

    def add_value(self, field_id: str, scope: str = SCOPE) -> None:
        """A user fills the field in on one of the space's work items, now."""
        with self.source.begin() as connection:
            item = connection.exec_driver_sql(
                f"SELECT MAX(w.id) FROM work_items w JOIN spaces s ON s.id = w.space_id"
                f" WHERE s.key = '{scope}'"
            ).scalar()
            connection.exec_driver_sql(
                "INSERT INTO field_values (work_item_id, field_id, updated_at)"
                f" VALUES ({item}, {int(field_id)}, {int(time.time())})"
            )

    def dispose(self) -> None:
        self.source.dispose()
        self.store_engine.dispose()


@pytest.fixture(scope="module")
def base_source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("remediation") / "source.db"
    generate_source(sqlite_url(path), SCALE)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def world(base_source: Path, tmp_path: Path) -> Iterator[World]:
    shutil.copy(base_source, tmp_path / "source.db")
    made = World(sqlite_url(tmp_path / "source.db"), sqlite_url(tmp_path / "store.db"))
    made.compute()
    yield made
    made.dispose()


@pytest.fixture(scope="module")
def postgres_world() -> Iterator[World]:
    with fresh_postgres_database() as source_url, fresh_postgres_database() as store_url:
        generate_source(source_url, SCALE)
        made = World(source_url, store_url)
        made.compute()
        yield made
        made.dispose()


def _apply_and_undo(world: World) -> None:
    before = world.configuration()
    chosen = world.unused()[:3]
    action = world.plan(chosen, key="admin-key")
    assert (action.status, action.generation, action.key_id) == ("planned", 1, "admin-key")
    # Between review and apply, a user fills in one of the three fields.
    world.add_value(chosen[1])
    check_submittable(action, world.store.header(FIELDS.name, SCOPE))
    assert world.log.submit(action.action_id) and not world.log.submit(action.action_id)

    result = world.run(action.action_id)
    assert (result.applied, result.skipped) == ([chosen[0], chosen[2]], [chosen[1]])
    audit = world.log.get(action.action_id)
    assert (audit.status, audit.applied_count, audit.skipped_count) == (DONE, 2, 1)
    assert audit.message == (
        "Remove from the space: 2 applied, 1 skipped (no longer qualify against the live source)."
    )
    assert audit.finished_at >= audit.created_at
    removed = {row for row in before if str(row[1]) in (chosen[0], chosen[2])}
    assert world.configuration() == before - removed and len(removed) == 2
    # A run of a finished action changes nothing more.
    assert world.run(action.action_id).batches_run == 0
    assert world.configuration() == before - removed

    undo, made = world.log.plan_undo(audit, "other-key")
    assert made and (undo.kind, undo.undoes, undo.key_id) == ("undo", action.action_id, "other-key")
    assert world.run(undo.action_id).action.message == "Undone: 2 restored."
    assert world.configuration() == before
    # Undoing twice is the same undo, and changes nothing more.
    again, made = world.log.plan_undo(audit, "other-key")
    assert (again.action_id, made) == (undo.action_id, False)
    assert world.run(again.action_id).batches_run == 0 and world.configuration() == before
    assert [a.kind for a in world.log.recent(audit.tenant, scope=SCOPE)] == ["undo", "apply"]


def test_apply_skips_what_gained_a_value_and_undo_restores_exactly(world: World):
    _apply_and_undo(world)


@pytest.mark.slow
def test_apply_and_undo_on_postgresql(postgres_world: World):
    _apply_and_undo(postgres_world)


def _together(admins: int, store_url: str, ask) -> list:
    """``ask(log)`` from ``admins`` threads on connections of their own, released at once."""
    barrier = threading.Barrier(admins)

    def one(_: int):
        log = ActionLog(create_engine_for(store_url))
        barrier.wait(timeout=30)
        return ask(log)

    with ThreadPoolExecutor(admins) as pool:
        return list(pool.map(one, range(admins)))


@pytest.mark.slow
def test_admins_posting_at_once_queue_one_apply_and_one_undo(postgres_world: World):
    """Round after round: of the same plan submitted at once, one submission wins; of undo
    asked at once, one undo is made and everyone gets it."""
    world, admins = postgres_world, 6
    url = world.store_url
    for _ in range(5):
        world.compute()  # fresh: the module's earlier test, and each round, changed the source
        action = world.plan(world.unused()[:1])
        submitted = _together(admins, url, lambda log, a=action: log.submit(a.action_id))
        assert sorted(submitted) == [False] * (admins - 1) + [True]
        done = run_action(FIELDS, action.action_id, world.source, world.log, world.store)
        undos = _together(admins, url, lambda log, d=done: log.plan_undo(d.action, "k1"))
        assert len({undo.action_id for undo, _ in undos}) == 1
        assert sum(made for _, made in undos) == 1
        world.run(undos[0][0].action_id)


def test_work_types_are_removed_from_the_space_and_put_back(world: World):
    world.compute(WORK_TYPES)
    before = world.configuration("space_work_types")
    unused = world.unused(WORK_TYPES)
    assert unused, "the scale leaves some work types unused"
    action = world.plan(unused, WORK_TYPES)
    world.log.submit(action.action_id)
    assert world.run(action.action_id, WORK_TYPES).applied == unused
    assert len(before - world.configuration("space_work_types")) == len(unused)
    undo, _ = world.log.plan_undo(world.log.get(action.action_id), "k1")
    world.run(undo.action_id, WORK_TYPES)
    assert world.configuration("space_work_types") == before


def test_a_stale_report_refuses_a_plan_and_a_replaced_one_refuses_to_apply(world: World):
    before = world.configuration()
    touch_space(world.source_url, SCOPE)
    with pytest.raises(PlanRefused, match=r"source changed since .*refresh the report") as refused:
        world.plan(world.unused()[:2])
    assert refused.value.kind == "stale"

    world.compute()  # refreshed: generation 2, fresh
    action = world.plan(world.unused()[:2])
    world.log.submit(action.action_id)
    world.compute()  # recomputed again before the run starts: the plan's report is replaced
    result = world.run(action.action_id)
    assert result.refused and result.applied == []
    assert "recomputed (generation 3) since this plan was reviewed from generation 2" in (
        result.action.message
    )
    assert world.configuration() == before

    other = world.plan(world.unused()[:1])
    world.compute()
    with pytest.raises(PlanRefused, match="review the new report") as replaced:
        check_submittable(other, world.store.header(FIELDS.name, SCOPE))
    assert replaced.value.kind == "replaced"


def test_a_plan_takes_only_the_reports_unused_entities(world: World):
    _, records = world.report()
    used = next(r["entity_id"] for r in records if not r["unused"])
    with pytest.raises(PlanRefused, match=f"{used} is not among the report's unused"):
        world.plan([world.unused()[0], used])
    with pytest.raises(PlanRefused, match="Select at least one"):
        world.plan([])


def _narrow(batch_size: int):
    """unused_fields with small batches, so that an action has several."""
    remediation = FIELDS.remediation
    original = remediation.batch_size
    remediation.batch_size = batch_size
    return remediation, original


@pytest.fixture
def small_batches() -> Iterator[None]:
    remediation, original = _narrow(3)
    yield
    remediation.batch_size = original


def test_batches_in_any_order_and_twice_give_what_one_orderly_run_gives(
    world: World, small_batches, base_source: Path, tmp_path: Path
):
    chosen = world.unused()[:10]
    orderly = world.plan(chosen)
    # The same plan on a second copy of the source, run batch after batch.
    shutil.copy(base_source, tmp_path / "second.db")
    second = World(sqlite_url(tmp_path / "second.db"), sqlite_url(tmp_path / "second_store.db"))
    second.compute()
    reference = second.plan(chosen)
    second.log.submit(reference.action_id)
    second.run(reference.action_id)

    world.log.submit(orderly.action_id)
    batches = world.log.batches(orderly.action_id)
    assert len(batches) == 4
    shuffled = random.Random(5).sample(batches * 2, len(batches) * 2)
    action = world.log.get(orderly.action_id)
    params = {**action.params, "since": 0}
    for batch in shuffled:
        fresh = next(b for b in world.log.batches(action.action_id) if b.batch == batch.batch)
        run_batch(FIELDS.remediation, action, fresh, world.source, world.log, params)
    result = world.run(orderly.action_id)
    assert result.batches_run == 0 and result.batches_done_before == 4
    assert sorted(result.applied) == sorted(chosen)
    assert world.configuration() == second.configuration()
    undo, _ = world.log.plan_undo(result.action, "k1")
    world.run(undo.action_id)
    second.dispose()


def test_a_run_that_died_around_the_sources_commit_resumes_without_losing_undo(
    world: World, small_batches
):
    before = world.configuration()
    chosen = world.unused()[:6]
    action = world.plan(chosen)
    world.log.submit(action.action_id)
    first, second = world.log.batches(action.action_id)
    params = {**action.params, "since": 0}
    # Batch 0: the source committed, the run died before marking it done.
    run_batch(FIELDS.remediation, action, first, world.source, world.log, params)
    with world.store_engine.begin() as connection:
        connection.execute(
            action_batches.update()
            .where(action_batches.c.action_id == action.action_id)
            .values(done_at=None)
        )
    # Batch 1: prepared (what undo needs recorded), the run died before the source committed.
    with world.source.connect() as connection:
        undo = FIELDS.remediation.apply(connection, SCOPE, second.entities, params)
        connection.rollback()
    world.log.prepare(action.action_id, 1, second.entities, [], undo)
    # A value lands before the run resumes: batch 1 was verified already, and the source must
    # get what its record says was applied.
    world.add_value(second.entities[0])

    result = world.run(action.action_id)
    assert result.batches_run == 2 and sorted(result.applied) == sorted(chosen)
    assert {str(row[1]) for row in before - world.configuration()} == set(chosen)
    stored = {b.batch: b.undo["removed"] for b in world.log.batches(action.action_id)}
    assert sorted(str(f) for f in stored[0] + stored[1]) == sorted(chosen), "undo kept"
    undo_action, _ = world.log.plan_undo(result.action, "k1")
    world.run(undo_action.action_id)
    assert world.configuration() == before


KILLER = """
import os, signal, sys
from precompute_assets.core.actions import ActionLog
from precompute_assets.core.db import create_engine_for
from precompute_assets.core.registry import load_tools
from precompute_assets.core.remediation import run_action
from precompute_assets.core.report_store import ReportStore

source_url, store_url, action_id = sys.argv[1:]
tool = load_tools(autoload=False)["unused_fields"]
remediation = tool.remediation
remediation.batch_size = 3
applied = remediation.apply
calls = []

def apply_then_die(source, scope, entities, params):
    calls.append(entities)
    undo = applied(source, scope, entities, params)
    if len(calls) == 2:  # mid-apply: the second batch's change made, not committed
        os.kill(os.getpid(), signal.SIGKILL)
    return undo

remediation.apply = apply_then_die
store = create_engine_for(store_url)
run_action(tool, action_id, create_engine_for(source_url), ActionLog(store), ReportStore(store))
"""


def test_a_killed_run_resumes_from_its_last_batch(world: World, small_batches):
    before = world.configuration()
    chosen = world.unused()[:9]
    action = world.plan(chosen)
    world.log.submit(action.action_id)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, world.source_url, world.store_url, action.action_id],
        cwd=PROJECT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = [b.batch for b in world.log.batches(action.action_id) if b.done]
    assert done == [0] and world.log.get(action.action_id).status == "running"
    assert len(before - world.configuration()) == 3, "the killed batch's change rolled back"

    result = world.run(action.action_id)
    assert (result.batches_run, result.batches_done_before) == (2, 1)
    assert result.action.status == DONE and sorted(result.applied) == sorted(chosen)
    assert {str(row[1]) for row in before - world.configuration()} == set(chosen)
    undo, _ = world.log.plan_undo(result.action, "k1")
    world.run(undo.action_id)
    assert world.configuration() == before
    stored = sa.select(action_batches.c.undo).where(action_batches.c.action_id == action.action_id)
    with world.store_engine.connect() as connection:
        kept = [json.loads(row) for row in connection.execute(stored).scalars()]
    assert sorted(str(f) for undo in kept for f in undo["removed"]) == sorted(chosen)


def test_a_refused_action_stays_refused(world: World):
    action = world.plan(world.unused()[:1])
    world.log.submit(action.action_id)
    world.compute()
    assert world.run(action.action_id).action.status == REFUSED
    assert world.run(action.action_id).action.status == REFUSED
